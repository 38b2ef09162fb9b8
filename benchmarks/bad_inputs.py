"""Bad inputs and faults against the stage commands, as a user would type them: what each one gets.

    HF_HUB_OFFLINE=1 python benchmarks/bad_inputs.py [--work-dir DIR]

Each case runs ``rlsyn-trl ...`` in a fresh process from a scratch folder (a 2-step cold start is made first, the
input the cases damage). A case passes when the command exits non-zero with the expected message
(the setting or file and the fix) and no traceback, or, for the cases that must work, exits 0 with the right
result. Prints a Markdown table (case, exit status, seconds, the first line of the message); exits 1 if a case
did not get what it should.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SFT = ["sft", "--config", "orl_faces/sft", "--max_steps", "2", "--batch_size", "8"]
DDPO = ["ddpo", "--config", "orl_faces/ddpo", "--num_epochs", "1", "--identities_per_epoch", "2",
        "--samples_per_identity", "4", "--sample_batch_size", "8", "--train_batch_size", "8",
        "--sample_num_steps", "4", "--eval_samples_per_identity", "2"]  # fmt: skip
CASIA_FOLDER = ["--dataset_name", "casia_webface", "--dataset_config", "default", "--shots", "2", "--data_dir",
                "my_faces"]  # fmt: skip
GENERATE = ["generate", "--config", "orl_faces/generate", "--samples_per_identity", "2", "--num_inference_steps", "2",
            "--identities", "s21"]  # fmt: skip


@dataclass
class Case:
    name: str
    argv: list[str]
    expect: str  # a regular expression the refusal (stderr) must match; "" for a command that must succeed
    prepare: Callable[[Path], list[str] | None] | None = None  # may return flags to add to argv
    check: Callable[[Path], bool] | None = None  # for a command that must succeed: is its result right?
    cwd: str = "."  # the folder under the scratch folder it runs from


def cli(argv: list[str], cwd: Path) -> tuple[int, float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rlsyn_trl.cli", *argv], cwd=cwd, capture_output=True, text=True)
    return done.returncode, time.perf_counter() - started, done.stderr


def damaged_copy(source: str, target: str, damage: Callable[[Path], None]) -> Callable[[Path], None]:
    def prepare(work: Path) -> None:
        shutil.copytree(work / source, work / target)
        damage(work / target)

    return prepare


def write_text(path: Path, text: str) -> None:
    path.write_text(text)


def truncate(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:100])


def faces(folder: Path, names: list[str], per_person: int = 2) -> None:
    rng = np.random.default_rng(len(names))
    for name in names:
        for number in range(per_person):
            (folder / name).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (112, 92), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{number}.png")


def two_folders(work: Path) -> None:
    for folder, names in {"A": ["alice", "bob"], "B": ["carol", "dave"]}.items():
        faces(work / folder / "my_faces", names)
    status, _, stderr = cli([*SFT, *CASIA_FOLDER, "--output_dir", "x"], work / "A")
    assert status == 0, stderr


def trained_on_b(work: Path) -> bool:
    return json.loads((work / "B" / "x" / "provenance.json").read_text())["data"]["identities"] == ["carol", "dave"]


def checkpointed_run(work: Path) -> None:
    status, _, stderr = cli([*SFT, "--checkpoint_every", "1", "--output_dir", "r"], work)
    assert status == 0, stderr


HELD_OPEN: list[socket.socket] = []  # the listeners of busy_port, open until the script ends


def busy_port(work: Path) -> list[str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    HELD_OPEN.append(listener)
    return ["--port", str(listener.getsockname()[1])]


CASES = [
    Case("--shots not offered by ORL", [*SFT, "--shots", "4", "--output_dir", "o1"], r"shots=4 is not allowed"),
    Case(
        "a batch that cannot fit in memory",
        [*SFT, "--batch_size", "100000", "--output_dir", "o2"],
        r"--batch_size 100000: .*GiB.*Use --batch_size \d+",
    ),  # fmt: skip
    Case("a negative learning rate", [*SFT, "--learning_rate", "-1", "--output_dir", "o3"], r"--learning_rate -1"),
    Case(
        "a diverging cold start (learning rate 1e30)",
        [*SFT, "--learning_rate", "1e30", "--warmup_steps", "0", "--max_steps", "6", "--output_dir", "o4"],
        r"not finite.*Lower the learning rate",
    ),  # fmt: skip
    Case(
        "a resume under another split",
        [*SFT, "--max_steps", "3", "--split_seed", "1", "--resume", "true", "--output_dir", "r"],
        r"[Rr]esume.*split_seed",
        prepare=checkpointed_run,
    ),  # fmt: skip
    Case(
        "the same --data_dir text, another folder's people",
        [*SFT, *CASIA_FOLDER, "--output_dir", "x"],
        "",
        prepare=two_folders,
        check=trained_on_b,
        cwd="B",
    ),
    Case(
        "a diverging DDPO (learning rate 1e9)",
        [*DDPO, "--adapter", "sft", "--train_learning_rate", "1e9", "--output_dir", "d1"],
        r"(non-|not )finite.*Lower train_learning_rate",
    ),  # fmt: skip
    Case(
        "an adapter without provenance.json",
        [*GENERATE, "--adapter", "no_provenance", "--output_dir", "g1"],
        r"no provenance.json.*--allow_unrecorded_input",
        prepare=damaged_copy("sft", "no_provenance", lambda f: (f / "provenance.json").unlink()),
    ),  # fmt: skip
    Case(
        "a truncated identity_lora.safetensors",
        [*GENERATE, "--adapter", "truncated", "--output_dir", "g2"],
        r"identity_lora.safetensors",
        prepare=damaged_copy("sft", "truncated", truncate("identity_lora.safetensors")),
    ),
    Case(
        "garbage provenance.json",
        [*GENERATE, "--adapter", "garbage", "--output_dir", "g3"],
        r"provenance.json should hold",
        prepare=damaged_copy("sft", "garbage", lambda f: (f / "provenance.json").write_text("{not json")),
    ),
    Case(
        "an empty folder as --adapter",
        [*GENERATE, "--adapter", "empty", "--output_dir", "g4"],
        r"empty is not a generator: expected an identity adapter .*it is empty",
        prepare=lambda work: (work / "empty").mkdir(),
    ),  # fmt: skip
    Case(
        "a missing .onnx encoder",
        [*DDPO, "--adapter", "sft", "--encoder", "missing.onnx", "--output_dir", "d2"],
        r"no such ONNX file",
    ),  # fmt: skip
    Case(
        "a text file as --encoder x.onnx",
        [*DDPO, "--adapter", "sft", "--encoder", "x.onnx", "--output_dir", "d3"],
        r"not an ONNX model",
        prepare=lambda work: write_text(work / "x.onnx", "not a model"),
    ),  # fmt: skip
    Case(
        "a missing --synthetic_dataset",
        [
            "train-recognizer",
            "--config",
            "orl_faces/recognizer",
            "--synthetic_dataset",
            "nowhere/dataset",
            "--output_dir",
            "t1",
        ],
        r"No synthetic dataset at nowhere/dataset: no such folder",
    ),  # fmt: skip
    Case(
        "an adapter folder as --synthetic_dataset",
        ["train-recognizer", "--config", "orl_faces/recognizer", "--synthetic_dataset", "sft", "--output_dir", "t2"],
        r"sft.*adapter",
    ),  # fmt: skip
    Case(
        "--push_to_hub offline",
        [*SFT, "--push_to_hub", "true", "--hub_model_id", "me/faces", "--output_dir", "o5"],
        r"HF_HUB_OFFLINE",
    ),  # fmt: skip
    Case("inspect on a port in use", ["inspect", "sft"], r"Port \d+ .*is in use", prepare=busy_port),  # fmt: skip
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, help="Scratch folder (default: a temporary one, removed).")
    parser.add_argument("--only", nargs="+", help="Run the cases whose names contain one of these words.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") as scratch:
        work = (args.work_dir or Path(scratch)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        status, seconds, stderr = cli([*SFT, "--output_dir", "sft"], work)  # the input the cases damage
        assert status == 0, stderr
        print(f"input: a cold start in {seconds:.0f} s", flush=True)
        rows, failed = [], 0
        for case in CASES:
            if args.only and not any(word in case.name for word in args.only):
                continue
            extra = case.prepare(work) if case.prepare is not None else None
            status, seconds, stderr = cli([*case.argv, *(extra or [])], work / case.cwd)
            lines = [line for line in stderr.splitlines() if line.strip() and "%|" not in line]
            lines = [line for line in lines if not line.startswith("(the traceback")]
            message = next((line for line in lines if case.expect and re.search(case.expect, line)), "")
            message = message or (lines[-1] if lines else "")
            if case.expect:
                ok = status != 0 and "Traceback" not in stderr and re.search(case.expect, stderr, re.S) is not None
            else:
                ok = status == 0 and case.check(work)
                message = "trained on its own folder's people" if ok else message
            failed += not ok
            rows.append((case.name, status, seconds, message[:160].replace("|", "/"), ok))
            print(f"{'ok ' if ok else 'BAD'} {case.name}: exit {status} in {seconds:.0f} s", flush=True)
            if not ok:
                print("    " + "\n    ".join(lines[-6:]), flush=True)
        print("\n| bad input | exit | s | what the user reads | as it should |\n|---|---:|---:|---|---|")
        for name, status, seconds, message, ok in rows:
            print(f"| {name} | {status} | {seconds:.0f} | {message} | {'yes' if ok else 'NO'} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
