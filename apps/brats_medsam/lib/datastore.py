"""LocalDatastore that refuses ids and tags that are not plain names (they are joined into paths)."""

from __future__ import annotations

import re

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


def check_name(kind: str, value) -> str:
    if not isinstance(value, str) or not SAFE.match(value) or ".." in value:
        raise HTTPException(status_code=400, detail=f"{kind} {value!r} is not a plain name "
                                                    "(letters, digits, '_', '-', '.'; no path parts)")
    return value


class SafeDatastore(LocalDatastore):
    def save_label(self, image_id, label_filename, label_tag, label_info):
        check_name("image id", image_id)
        check_name("label tag", label_tag)
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"image {image_id!r} is not in the datastore")
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def add_image(self, image_id, image_filename, image_info):
        if image_id:
            check_name("image id", image_id)
        return super().add_image(image_id, image_filename, image_info)

    def get_label_uri(self, label_id, label_tag):
        check_name("label id", label_id)
        check_name("label tag", label_tag)
        return super().get_label_uri(label_id, label_tag)
