"""Pair builders: insightface ``.bin`` files byte-for-byte as Python 2 wrote them, and a tiny RFW ``test/`` tree."""

import io
import pickle
import struct

import datasets
import numpy as np
import pytest
from PIL import Image

from rlsyn_trl.data import IDENTITY_BUILDERS, FaceVerification, Rfw, check_identity_options, load_identity_dataset
from rlsyn_trl.data.face_verification import RFW_RACES, VERIFICATION_SETS, load_pair_bin, read_rfw_pairs

NUM_PAIRS = 20  # 10 folds of 2


def encoded_face(shade: int, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), (shade, 255 - shade, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


def python2_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """What Python 2's ``pickle.dump((bins, issame_list), f, protocol=2)`` writes, as in insightface's packing
    scripts: ``str`` items become (SHORT_)BINSTRING opcodes, which Python 3 reads back with ``encoding="bytes"``."""
    out, memo = [b"\x80\x02"], iter(range(1, 256))  # PROTO 2; BINPUT memo slots as cPickle numbers them

    def put() -> bytes:
        return b"q" + bytes([next(memo)])

    out += [b"]", put(), b"("]  # EMPTY_LIST, BINPUT, MARK
    for data in bins:
        header = b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<i", len(data))
        out += [header, data, put()]
    out += [b"e", b"]", put(), b"("]  # APPENDS, then the issame list
    out += [b"\x88" if same else b"\x89" for same in issame]  # NEWTRUE / NEWFALSE
    out += [b"e", b"\x86", put(), b"."]  # APPENDS, TUPLE2, BINPUT, STOP
    return b"".join(out)


def pair_images_and_labels() -> tuple[list[bytes], list[bool]]:
    bins = [encoded_face(shade, "PNG" if shade % 3 else "JPEG") for shade in range(0, 2 * NUM_PAIRS * 5, 5)]
    return bins, [index % 2 == 0 for index in range(NUM_PAIRS)]


@pytest.fixture
def bins_dir(tmp_path):
    folder = tmp_path / "faces_webface_112x112"
    folder.mkdir()
    (folder / "lfw.bin").write_bytes(python2_pickle(*pair_images_and_labels()))
    return folder


def build(builder_class, tmp_path, **kwargs):
    builder = builder_class(cache_dir=str(tmp_path / "cache"), **kwargs)
    builder.download_and_prepare()
    return builder.as_dataset()["test"]


def test_bin_pairs_in_order_with_folds(bins_dir, tmp_path):
    bins, issame = pair_images_and_labels()
    ds = build(FaceVerification, tmp_path, config_name="lfw", data_dir=str(bins_dir))
    assert IDENTITY_BUILDERS["face_verification"] is FaceVerification
    assert ds["issame"][:] == issame
    assert ds["fold"][:] == [index // 2 for index in range(NUM_PAIRS)]
    raw = ds.cast_column("image_a", datasets.Image(decode=False)).cast_column("image_b", datasets.Image(decode=False))
    assert [row["image_a"]["bytes"] for row in raw] == bins[0::2]
    assert [row["image_b"]["bytes"] for row in raw] == bins[1::2]
    assert ds[3]["image_b"].size == (12, 12)


@pytest.mark.parametrize(
    "dump",
    [
        lambda bins, issame: pickle.dumps((bins, issame), protocol=2),  # re-saved by Python 3 (_codecs.encode)
        lambda bins, issame: pickle.dumps(([np.frombuffer(b, np.uint8) for b in bins], np.array(issame))),
    ],
    ids=["python3-protocol2", "numpy-arrays"],
)
def test_bin_variants_parse(tmp_path, dump):
    bins, issame = pair_images_and_labels()
    path = tmp_path / "cfp_fp.bin"
    path.write_bytes(dump(bins, issame))
    assert load_pair_bin(path) == (bins, issame)


def test_bin_refuses_code_and_wrong_layout(tmp_path):
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(pickle.dumps((print, [True])))
    with pytest.raises(ValueError, match=r"agedb_30\.bin is not an insightface pair file.*builtins\.print"):
        load_pair_bin(path)
    bins, issame = pair_images_and_labels()
    path.write_bytes(python2_pickle(bins[:-1], issame))
    with pytest.raises(ValueError, match=r"agedb_30\.bin holds 39 images for 20 pairs"):
        load_pair_bin(path)


def test_missing_bin_is_named(bins_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Missing pair file .*cplfw\.bin.*insightface"):
        build(FaceVerification, tmp_path, config_name="cplfw", data_dir=str(bins_dir))


def test_corrupted_bin_image_is_named(tmp_path):
    bins, issame = pair_images_and_labels()
    bins[5] = b"\xff\xd8 not a jpeg"
    (tmp_path / "calfw.bin").write_bytes(python2_pickle(bins, issame))
    with pytest.raises(datasets.exceptions.DatasetGenerationError) as error:
        build(FaceVerification, tmp_path, config_name="calfw", data_dir=str(tmp_path))
    assert "calfw.bin image 5" in str(error.value.__cause__)


def rfw_pair_lines(race: str) -> list[str]:
    """10 folds of one matched then one mismatched pair, tab-separated as in the release."""
    lines = []
    for fold in range(10):
        identity, other = f"m.0{race[:2].lower()}{fold % 3}", f"m.0{race[:2].lower()}{(fold + 1) % 3}"
        lines += [f"{identity}\t1\t2", f"{identity}\t2\t{other}\t1"]
    return lines


@pytest.fixture
def rfw_root(tmp_path):
    root = tmp_path / "RFW"
    for shade, race in enumerate(RFW_RACES):
        for index in range(3):
            identity = f"m.0{race[:2].lower()}{index}"
            for number in (1, 2):
                path = root / "test" / "data" / race / identity / f"{identity}_{number:04d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encoded_face(60 * shade + number))
        pairs = root / "test" / "txts" / race / f"{race}_pairs.txt"
        pairs.parent.mkdir(parents=True, exist_ok=True)
        pairs.write_text("\n".join(rfw_pair_lines(race)) + "\n")
    return root


def test_rfw_single_race(rfw_root, tmp_path):
    ds = build(Rfw, tmp_path, config_name="indian", data_dir=str(rfw_root))
    assert IDENTITY_BUILDERS["rfw"] is Rfw
    assert ds.num_rows == 20 and set(ds["race"][:]) == {RFW_RACES.index("Indian")}
    assert ds["issame"][:] == [True, False] * 10
    assert ds["fold"][:] == [index // 2 for index in range(20)]
    assert ds[1]["source_a"] == "test/data/Indian/m.0in0/m.0in0_0002.jpg"
    assert ds[1]["source_b"] == "test/data/Indian/m.0in1/m.0in1_0001.jpg"
    assert ds[1]["image_a"].getpixel((6, 6)) == pytest.approx((180 + 2, 255 - 182, 40), abs=8)


def test_rfw_all_races(rfw_root, tmp_path):
    ds = build(Rfw, tmp_path, data_dir=str(rfw_root))
    assert ds.num_rows == 80
    assert ds.features["race"].int2str(ds["race"][:]) == [race for race in RFW_RACES for _ in range(20)]
    assert ds["fold"][:] == [index // 2 for index in range(20)] * 4


def test_rfw_malformed_pair_line_is_named(rfw_root, tmp_path):
    path = rfw_root / "test" / "txts" / "Asian" / "Asian_pairs.txt"
    path.write_text(path.read_text().replace("m.0as0\t1\t2", "m.0as0\t1\tm.0as0_0002.jpg", 1))
    with pytest.raises(ValueError, match=r"Malformed line 1 of .*Asian_pairs\.txt"):
        read_rfw_pairs(path)


def test_rfw_missing_parts_are_named(rfw_root, tmp_path):
    (rfw_root / "test" / "txts" / "African" / "African_pairs.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"Missing pair list .*African_pairs\.txt.*whdeng\.cn"):
        build(Rfw, tmp_path, config_name="african", data_dir=str(rfw_root))
    (rfw_root / "test" / "data" / "Caucasian" / "m.0ca1" / "m.0ca1_0001.jpg").unlink()
    with pytest.raises(datasets.exceptions.DatasetGenerationError) as error:
        build(Rfw, tmp_path, config_name="caucasian", data_dir=str(rfw_root))
    assert "Missing image" in str(error.value.__cause__) and "m.0ca1_0001.jpg" in str(error.value.__cause__)
    with pytest.raises(FileNotFoundError, match=r"RFW test folder not found.*whdeng\.cn"):
        build(Rfw, tmp_path, data_dir=str(tmp_path))


@pytest.mark.parametrize("config_name", [None, "LFW", "default"])
def test_missing_or_unknown_set_lists_the_sets(bins_dir, tmp_path, config_name):
    """Without a set name the builder used to look for default.bin; now it lists the five sets and how to pass one."""
    expected = "no config name" if config_name is None else f"unknown config '{config_name}'"
    listing = r"'lfw', 'agedb_30', 'cfp_fp', 'calfw', 'cplfw'"
    message = (
        rf"face_verification got {expected}: choose one of {listing} .*load_identity_dataset\(\"face_verification\""
    )
    with pytest.raises(ValueError, match=message) as error:
        load_identity_dataset("face_verification", config_name, data_dir=str(bins_dir), cache_dir=str(tmp_path / "c"))
    assert 'load_identity_dataset("face_verification", "lfw", data_dir=...)' in str(error.value)
    assert "default.bin" not in str(error.value)
    with pytest.raises(ValueError, match=message):
        FaceVerification(config_name=config_name, data_dir=str(bins_dir), cache_dir=str(tmp_path / "c"))
    assert all(name in str(error.value) for name in VERIFICATION_SETS)


def test_rfw_defaults_to_all_races_and_lists_its_configs(tmp_path):
    check_identity_options("rfw")  # a default config: no name needed
    with pytest.raises(ValueError, match=r"rfw got unknown config 'Asian': choose one of 'all', 'african', 'asian'"):
        check_identity_options("rfw", "Asian")
