"""The synthetic public faces: reproducible per seed, resumable, framed like ORL, refused without their extra."""

import importlib.metadata
import sys

import numpy as np
import pytest
from conftest import FACES_INSTALL, needs_faces_extra
from PIL import Image

from rlsyn_trl.data import check_identity_options, identity_names, load_identity_dataset
from rlsyn_trl.data import synthetic_faces as faces


def images(data) -> list[bytes]:
    return [np.asarray(image).tobytes() for image in data["train"]["image"]]


@needs_faces_extra
def test_faces_are_a_pure_function_of_the_seed(tmp_path):
    first = load_identity_dataset("synthetic_faces", num_faces=2, views=2, cache_dir=str(tmp_path / "a"))
    again = load_identity_dataset("synthetic_faces", num_faces=2, views=2, cache_dir=str(tmp_path / "b"))
    other = load_identity_dataset("synthetic_faces", num_faces=2, seed=1, cache_dir=str(tmp_path / "b"))
    train = first["train"]
    assert len(train) == 4 and train.features["label"].names == ["face000000", "face000001"]
    assert train["label"] == [0, 0, 1, 1] and train["source"][1] == "seed0/face000000/view1"
    assert all(image.size == (92, 112) and image.mode == "L" for image in train["image"])
    assert images(first) == images(again)
    assert images(first)[0] != images(first)[1]  # a view is not the plain face
    assert images(other)[0] != images(first)[0]


@needs_faces_extra
def test_a_killed_render_resumes_and_a_larger_build_reuses_the_faces(tmp_path, monkeypatch):
    folder = faces.render_faces(tmp_path / "render", 2, seed=0, truncation=0.7)
    stored = [faces.face_path(folder, index).read_bytes() for index in range(2)]
    faces.face_path(folder, 1).unlink()  # killed before face 1 was written
    rendered = []
    render = faces.FaceRenderer.render
    monkeypatch.setattr(faces.FaceRenderer, "render", lambda self, latent: rendered.append(1) or render(self, latent))
    faces.render_faces(folder, 3, seed=0, truncation=0.7)
    assert len(rendered) == 2  # face 1 again and the new face 2; face 0 was kept
    assert [faces.face_path(folder, index).read_bytes() for index in range(2)] == stored


def test_without_the_extra_the_build_is_refused_naming_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with pytest.raises(ImportError, match=FACES_INSTALL):
        load_identity_dataset("synthetic_faces", num_faces=2, cache_dir=str(tmp_path))
    assert not list(tmp_path.rglob("*.png"))


def test_without_the_weights_the_build_is_refused_naming_the_install_command(tmp_path, monkeypatch):
    pytest.importorskip("openvino", reason="the openvino half of the refusal is tested above")

    def distribution(name):
        if name == faces.DISTRIBUTION:
            raise importlib.metadata.PackageNotFoundError(name)
        return importlib.metadata.Distribution.from_name(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(ImportError, match=FACES_INSTALL):
        load_identity_dataset("synthetic_faces", num_faces=2, cache_dir=str(tmp_path))


def test_identities_are_listed_without_rendering(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert identity_names("synthetic_faces", num_faces=3) == ["face000000", "face000001", "face000002"]


@pytest.mark.parametrize(
    ("option", "value"), [("num_faces", 0), ("views", 0), ("seed", -1), ("truncation", 0.0), ("truncation", 1.5)]
)
def test_bad_options_are_refused_before_any_work(option, value):
    with pytest.raises(ValueError, match=f"synthetic_faces/public: {option}="):
        check_identity_options("synthetic_faces", **{option: value})


def test_framing_keeps_orl_aspect_and_the_plain_view_is_the_centre():
    ramp = np.tile(np.linspace(0, 255, 1024, dtype=np.float32), (1024, 1)).astype(np.uint8)
    stored = faces.frame_face(Image.fromarray(ramp))
    assert stored.size == (92 + 2 * faces.CONTEXT[0], 112 + 2 * faces.CONTEXT[1])
    plain = faces.face_view(stored, None)
    assert plain.size == (92, 112)
    assert np.array_equal(np.asarray(plain), np.asarray(stored)[faces.CONTEXT[1] : -faces.CONTEXT[1], 12:-12])
    # the ramp's left edge in the plain view is the render's x = 0.15
    assert abs(float(np.asarray(plain)[:, 0].mean()) - 0.15 * 255) < 3
    views = [np.asarray(faces.face_view(stored, np.random.default_rng([0, 0, v]))) for v in (1, 2)]
    assert views[0].shape == (112, 92) and not np.array_equal(views[0], views[1])


def test_latents_of_fewer_faces_are_a_prefix():
    assert np.array_equal(faces.face_latents(3, 2), faces.face_latents(3, 5)[:2])
