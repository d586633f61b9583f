"""Mesh files: PLY, OBJ or STL per object, or one GLB per image, and a manifest.

Files are in µm with columns ``(x, y, z)`` (the usual order of mesh files and
viewers; :meth:`ObjectMesh.xyz` reverses the axes and the winding so normals
stay outward).  The object id is in every file: a PLY/OBJ comment and the OBJ
object name, the STL header, and in the GLB the name of the scene node and its
``extras.object_id``.  Writers are our own small numpy encoders (binary PLY and
STL, text OBJ, glTF 2.0 binary), so thousands of objects are written without
per-object library overhead; the GLB writer streams its binary buffer to a
temporary file, so memory stays bounded however many objects it holds.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from dls_microscopy.errors import InputError, OutputError
from dls_microscopy.geometry.mesh import ObjectMesh

__all__ = ["FORMATS", "GlbWriter", "MeshFormat", "write_manifest", "write_mesh_file"]

MeshFormat = Literal["glb", "ply", "obj", "stl"]
FORMATS: tuple[str, ...] = ("glb", "ply", "obj", "stl")

_GLB_MAGIC, _GLB_JSON, _GLB_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def object_file_name(object_id: int, fmt: str) -> str:
    """File name of one object's mesh, e.g. ``object_12.ply``."""
    return f"object_{int(object_id)}.{fmt}"


def write_mesh_file(mesh: ObjectMesh, path: str | os.PathLike[str], fmt: str | None = None) -> Path:
    """Write one object's mesh as PLY (binary), OBJ or STL (binary).

    Parameters
    ----------
    mesh : ObjectMesh
    path : path-like
        Destination file.
    fmt : {"ply", "obj", "stl"}, optional
        Default from the file extension.

    Returns
    -------
    Path
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    writers = {"ply": _write_ply, "obj": _write_obj, "stl": _write_stl}
    if fmt not in writers:
        raise InputError(f"unknown mesh format {fmt!r} for one object (use ply, obj or stl)")
    vertices, faces = mesh.xyz()
    try:
        with open(path, "wb") as fh:
            writers[fmt](fh, mesh.id, np.asarray(vertices, np.float32), np.asarray(faces))
    except OSError as exc:
        raise OutputError(f"cannot write mesh: {exc.strerror or exc}", path=path) from exc
    return path


def _write_ply(fh: BinaryIO, object_id: int, v: np.ndarray, f: np.ndarray) -> None:
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"comment object_id {object_id}\ncomment units um\n"
        f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    fh.write(header.encode("ascii"))
    fh.write(v.astype("<f4").tobytes())
    rec = np.empty(len(f), dtype=np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
    rec["n"] = 3
    rec["i"] = f
    fh.write(rec.tobytes())


def _write_obj(fh: BinaryIO, object_id: int, v: np.ndarray, f: np.ndarray) -> None:
    fh.write(f"# object_id {object_id}\n# units um\no {object_id}\n".encode("ascii"))
    np.savetxt(fh, v, fmt="v %.7g %.7g %.7g")
    np.savetxt(fh, f.astype(np.int64) + 1, fmt="f %d %d %d")


def _write_stl(fh: BinaryIO, object_id: int, v: np.ndarray, f: np.ndarray) -> None:
    fh.write(f"dls-microscopy object_id={object_id} units=um".encode("ascii").ljust(80, b" ")[:80])
    fh.write(struct.pack("<I", len(f)))
    tri = v[f]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-30)
    rec = np.zeros(len(f), dtype=np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("a", "<u2")]))
    rec["n"] = normal
    rec["v"] = tri
    fh.write(rec.tobytes())


class GlbWriter:
    """Stream many object meshes into one glTF 2.0 binary file, one scene node per object.

    Use as a context manager; :meth:`add` appends a mesh, and the file is
    assembled on exit (header, JSON, then the binary buffer copied from a
    temporary file).  Nodes are named by object id.

    Parameters
    ----------
    path : path-like
        Destination ``.glb`` file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._json: dict[str, Any] = {
            "asset": {
                "version": "2.0",
                "generator": "dls-microscopy",
                "extras": {"units": "micrometre", "axes": "xyz"},
            },
            "scene": 0,
            "scenes": [{"name": "objects", "nodes": []}],
            "nodes": [],
            "meshes": [],
            "accessors": [],
            "bufferViews": [],
        }
        self._bin: Any = None
        self._size = 0

    def __enter__(self) -> GlbWriter:
        try:
            self._bin = tempfile.TemporaryFile(dir=self.path.parent)
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=self.path) from exc
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            self._bin.close()

    def _append(self, data: bytes, target: int) -> int:
        view = {"buffer": 0, "byteOffset": self._size, "byteLength": len(data), "target": target}
        self._bin.write(data)
        pad = (-len(data)) % 4
        self._bin.write(b"\0" * pad)
        self._size += len(data) + pad
        self._json["bufferViews"].append(view)
        return len(self._json["bufferViews"]) - 1

    def add(self, mesh: ObjectMesh) -> str:
        """Append one mesh as a node named by its id; returns the node name."""
        vertices, faces = mesh.xyz()
        v = np.ascontiguousarray(vertices, "<f4")
        f = np.ascontiguousarray(faces, "<u4")
        acc = self._json["accessors"]
        pos_view = self._append(v.tobytes(), _ARRAY_BUFFER)
        acc.append(
            {
                "bufferView": pos_view,
                "componentType": _FLOAT,
                "count": len(v),
                "type": "VEC3",
                "min": v.min(axis=0).tolist() if len(v) else [0, 0, 0],
                "max": v.max(axis=0).tolist() if len(v) else [0, 0, 0],
            }
        )
        idx_view = self._append(f.tobytes(), _ELEMENT_ARRAY_BUFFER)
        acc.append({"bufferView": idx_view, "componentType": _UINT32, "count": int(f.size), "type": "SCALAR"})
        name = str(int(mesh.id))
        self._json["meshes"].append(
            {
                "name": name,
                "primitives": [
                    {"attributes": {"POSITION": len(acc) - 2}, "indices": len(acc) - 1, "mode": 4}
                ],
            }
        )
        self._json["nodes"].append(
            {"name": name, "mesh": len(self._json["meshes"]) - 1, "extras": {"object_id": int(mesh.id)}}
        )
        self._json["scenes"][0]["nodes"].append(len(self._json["nodes"]) - 1)
        if self._size > 2**32 - 2**20:
            raise OutputError(
                "GLB files are limited to 4 GiB; write one file per object (ply, obj or stl) instead",
                path=self.path,
            )
        return name

    def _finish(self) -> None:
        doc = dict(self._json)
        if self._size:
            doc["buffers"] = [{"byteLength": self._size}]
        else:  # glTF forbids empty arrays
            for key in ("accessors", "bufferViews", "meshes", "nodes"):
                doc.pop(key)
            doc["scenes"] = [{"name": "objects"}]
        text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        text += b" " * ((-len(text)) % 4)
        total = 12 + 8 + len(text) + (8 + self._size if self._size else 0)
        try:
            with open(self.path, "wb") as out:
                out.write(struct.pack("<III", _GLB_MAGIC, 2, total))
                out.write(struct.pack("<II", len(text), _GLB_JSON))
                out.write(text)
                if self._size:
                    out.write(struct.pack("<II", self._size, _GLB_BIN))
                    self._bin.seek(0)
                    shutil.copyfileobj(self._bin, out, 16 * 2**20)
        except OSError as exc:
            raise OutputError(f"cannot write GLB: {exc.strerror or exc}", path=self.path) from exc


def write_manifest(path: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` as indented JSON (atomically: temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write manifest: {exc.strerror or exc}", path=path) from exc
    return path
