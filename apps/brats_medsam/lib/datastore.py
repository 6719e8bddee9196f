"""LocalDatastore made safe for a studies folder that holds original scans.

- Ids and tags must be plain names (they are joined into paths).
- The store's images are symlinks into the studies folder: nothing here ever writes or deletes through them.
  An upload under an existing id is refused (409); a new upload is copied into the store; deleting an image
  removes the store entry and its labels, never the original file; deleted images and labels are recorded
  (``bratsmedsam.tombstones``) so that ``serve`` does not bring them back from the studies folder.
- Uploaded images and labels are checked (``bratsmedsam.validation``) before they are stored: 422 otherwise.
- Every file and the index are written atomically (temp file, fsync, ``os.replace``); an unreadable index is set
  aside as ``datastore_v2.json.corrupt-<time>`` and rebuilt from the files instead of stopping the server.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time

from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore, LocalDatastoreModel

from bratsmedsam import tombstones
from bratsmedsam.atomic import atomic_path, write_text
from bratsmedsam.errors import LimitError, UserError
from bratsmedsam.validation import VOLUME_SUFFIXES, check_image_file, check_label_file

logger = logging.getLogger(__name__)
SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


def check_name(kind: str, value) -> str:
    if not isinstance(value, str) or not SAFE.match(value) or ".." in value:
        raise HTTPException(status_code=400, detail=f"{kind} {value!r} is not a plain name "
                                                    "(letters, digits, '_', '-', '.'; no path parts)")
    return value


class SafeDatastore(LocalDatastore):
    def __init__(self, datastore_path: str, label_values=(1,), max_voxels: int = 64_000_000, **kwargs):
        self.label_values = tuple(int(v) for v in label_values)
        self.max_voxels = int(max_voxels)
        super().__init__(datastore_path, **kwargs)

    # --- the index: atomic writes, a damaged file is set aside and rebuilt ---------------------------------------
    def _init_from_datastore_file(self, throw_exception=False):
        path = self._datastore_config_path
        try:
            with FileLock(self._lock_file):
                if not os.path.exists(path):
                    return
                ts = os.stat(path).st_mtime
                if self._config_ts == ts:
                    return
                with open(path) as fp:
                    model = LocalDatastoreModel.model_validate_json(fp.read())
                model.base_path = self._datastore_path
                self._datastore, self._config_ts = model, ts
        except (ValueError, OSError) as exc:
            aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
            logger.error(f"datastore index {path} is unreadable ({type(exc).__name__}); kept as {aside}, "
                         "rebuilding it from the files")
            try:
                os.replace(path, aside)
            except OSError:
                pass
            self._config_ts = 0

    def _update_datastore_file(self, lock=True):
        def write():
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            write_text(self._datastore_config_path, text)
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()

    # --- images: originals are never written or deleted --------------------------------------------------------
    def add_image(self, image_id, image_filename, image_info):
        guessed, ext = self._to_id(os.path.basename(image_filename))
        image_id = check_name("image id", image_id or guessed)
        if ext not in VOLUME_SUFFIXES:
            raise HTTPException(status_code=415, detail=f"image file type {ext!r}: expected one of {VOLUME_SUFFIXES}")
        if image_id in self._datastore.objects or os.path.lexists(self._image_path(image_id, ext)):
            raise HTTPException(status_code=409, detail=f"image {image_id!r} already exists; "
                                                        "images are never replaced over REST (use a new id)")
        try:
            check_image_file(image_filename, self.max_voxels)
        except UserError as exc:
            raise HTTPException(status_code=413 if isinstance(exc, LimitError) else 422, detail=str(exc)) from None
        dest = self._image_path(image_id, ext)
        with FileLock(self._lock_file):
            with atomic_path(dest) as tmp:
                shutil.copyfile(image_filename, tmp)
            info = dict(image_info or {}, ts=int(time.time()), name=os.path.basename(dest))
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
            self._update_datastore_file(lock=False)
        tombstones.mark(self._datastore_path, image_id, removed=False)
        return image_id

    def remove_image(self, image_id):
        check_name("image id", image_id)
        obj = self._datastore.objects.get(image_id)
        if not obj:
            raise HTTPException(status_code=404, detail=f"image {image_id!r} is not in the datastore")
        for tag in list(obj.labels):
            self.remove_label(image_id, tag)
        entry = self._image_path(image_id, obj.image.ext)
        with FileLock(self._lock_file):
            if os.path.lexists(entry):
                os.unlink(entry)  # the store entry (a link into the studies folder, or an uploaded copy)
            self._datastore.objects.pop(image_id, None)
            self._update_datastore_file(lock=False)
        tombstones.mark(self._datastore_path, image_id)

    def _image_path(self, image_id: str, ext: str) -> str:
        return os.path.join(self._datastore.image_path(), self._filename(image_id, ext))

    # --- labels: checked, then written atomically ----------------------------------------------------------------
    def save_label(self, image_id, label_filename, label_tag, label_info):
        check_name("image id", image_id)
        check_name("label tag", label_tag)
        obj = self._datastore.objects.get(image_id)
        if not obj:
            raise HTTPException(status_code=404, detail=f"image {image_id!r} is not in the datastore")
        _, ext = self._to_id(os.path.basename(label_filename))
        if ext not in VOLUME_SUFFIXES:
            raise HTTPException(status_code=415, detail=f"label file type {ext!r}: expected one of {VOLUME_SUFFIXES}")
        try:
            check_label_file(label_filename, self.get_image_uri(image_id), self.label_values)
        except UserError as exc:
            raise HTTPException(status_code=422, detail=f"label for {image_id!r} refused: {exc}") from None
        label_dir = self._datastore.label_path(label_tag)
        name = self._filename(image_id, ext)
        with FileLock(self._lock_file):
            os.makedirs(label_dir, exist_ok=True)
            with atomic_path(os.path.join(label_dir, name)) as tmp:
                shutil.copyfile(label_filename, tmp)
            for other in VOLUME_SUFFIXES:  # a label saved earlier in another format is superseded
                stale = os.path.join(label_dir, self._filename(image_id, other))
                if other != ext and os.path.lexists(stale):
                    os.unlink(stale)
            info = dict(label_info or {}, ts=int(time.time()), name=name)
            obj.labels[label_tag] = DataModel(info=info, ext=ext)
            self._update_datastore_file(lock=False)
        tombstones.mark(self._datastore_path, image_id, label_tag, removed=False)
        return image_id

    def remove_label(self, label_id, label_tag):
        check_name("label id", label_id)
        check_name("label tag", label_tag)
        obj = self._datastore.objects.get(label_id)
        if not obj or label_tag not in obj.labels:
            raise HTTPException(status_code=404, detail=f"no label {label_tag!r} for image {label_id!r}")
        path = os.path.join(self._datastore.label_path(label_tag), self._filename(label_id, obj.labels[label_tag].ext))
        with FileLock(self._lock_file):
            if os.path.lexists(path):
                os.unlink(path)
            obj.labels.pop(label_tag, None)
            self._update_datastore_file(lock=False)
        tombstones.mark(self._datastore_path, label_id, label_tag)

    def get_label_uri(self, label_id, label_tag):
        check_name("label id", label_id)
        check_name("label tag", label_tag)
        return super().get_label_uri(label_id, label_tag)

    def update_image_info(self, image_id, info):
        check_name("image id", image_id)
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"image {image_id!r} is not in the datastore")
        if not isinstance(info, dict):
            raise HTTPException(status_code=422, detail="image info must be a JSON object")
        return super().update_image_info(image_id, info)

    def update_label_info(self, label_id, label_tag, info):
        check_name("label id", label_id)
        check_name("label tag", label_tag)
        if not self._datastore.label(label_id, label_tag):
            raise HTTPException(status_code=404, detail=f"no label {label_tag!r} for image {label_id!r}")
        if not isinstance(info, dict):
            raise HTTPException(status_code=422, detail="label info must be a JSON object")
        return super().update_label_info(label_id, label_tag, info)
