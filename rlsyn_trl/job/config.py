"""The end-to-end job's settings: one dataclass, which ``rlsyn-trl run-all`` parses with ``HfArgumentParser`` (the
parser under the stages' ``TrlParser``, without its ``--config``).

``run-all`` takes every field as ``--field_name value`` (``--field-name`` too). The module imports neither torch nor
``datasets``: a bad value is refused before either is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import yaml

from ..data.orl_split import ALLOWED_SHOTS, check_private_options
from ..recipes import RECIPES_DIR
from ..utils.checks import SettingsError, parse_guidance_interval, parse_reference_strength, require
from ..utils.launch import MAX_EMBEDDED_PROCESSES, PRECISIONS, check_precision

RECOGNIZER_STARTS = ("encoder", "scratch")
JOB_STAGES = ("all", "generation", "recognizers")


def embedded_recipe(stage: str) -> dict:
    """The settings of ``recipes/orl_faces/<stage>.yaml``: the main job runs exactly the recipes' defaults."""
    return yaml.safe_load((RECIPES_DIR / "orl_faces" / f"{stage}.yaml").read_text())


@dataclass
class MainJobConfig:
    """Settings of the end-to-end job; the stage settings are the recipes' defaults scaled by ``quick``."""

    output_dir: str = field(default="outputs/main", metadata={"help": "Folder of the stages' outputs and the results."})
    shots: int = field(
        default=1,
        metadata={
            "help": "Real training images per target identity (ORL's private split).",
            "metavar": "{" + ",".join(map(str, ALLOWED_SHOTS)) + "}",
        },
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the ORL private train/test split (>= 0)."})
    seed: int = field(default=0, metadata={"help": "Seed of every stage (batches, noise, sampling)."})
    quick: bool = field(default=False, metadata={"help": "Few steps everywhere (about 5 minutes on 2 cores)."})
    prior: str = field(default="embedded:orl_faces", metadata={"help": "The pretrained DiT prior (folder or Hub id)."})
    encoder: str = field(
        default="embedded:orl_faces/encoder", metadata={"help": "The identity feature extractor phi of the reward."}
    )
    samples_per_identity: int = field(default=20, metadata={"help": "Samples per identity in each synthetic set."})
    inference_steps: int | None = field(
        default=None,
        metadata={
            "help": "DDIM steps of the synthetic datasets; None: DDPO's training sampler (ddpo.yaml's sample_num_steps "
            "and sample_eta), the chain the RL policy was optimised on, used for both adapters."
        },
    )
    guidance_scale: float = field(
        default_factory=lambda: embedded_recipe("generate")["guidance_scale"],
        metadata={
            "help": "Classifier-free guidance of the synthetic datasets (default: recipes/orl_faces/generate.yaml's; "
            "1 is the conditional model alone). DDPO trains with its own (ddpo.yaml's sample_guidance_scale)."
        },
    )
    guidance_interval: str | None = field(
        default_factory=lambda: embedded_recipe("generate").get("guidance_interval"),
        metadata={
            "help": "Noise levels t/T \"lo,hi\" where the datasets' guidance applies (default: generate.yaml's; unset: "
            "every step)."
        },
    )
    recognizer_steps: int = field(
        default_factory=lambda: embedded_recipe("recognizer")["max_steps"],
        metadata={"help": "Training steps of every recognizer row (default: recipes/orl_faces/recognizer.yaml's)."},
    )
    recognizer_seeds: int = field(
        default=1,
        metadata={
            "help": "Recognizers trained per row, with seeds seed, seed + 1, ...: a row reads their mean, and each row "
            "its gain over real + standard augmentation paired by seed, with the standard error. One recognizer seed "
            "moves a row by a few points; 3 resolve a gap of 1-2 points (each adds the rows' training time)."
        },
    )
    recognizer_start: str = field(
        default="encoder",
        metadata={
            "help": "'encoder': fine-tune the public feature extractor (`encoder`); 'scratch': the tiny ResNet from "
            "random weights. Every row uses the same start; the encoder gives the better real-only result.",
            "choices": list(RECOGNIZER_STARTS),
        },
    )
    reuse: bool = field(default=True, metadata={"help": "Reuse finished stages found in output_dir."})
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "Precision of every stage: 'auto' keeps the recipes' own setting (auto: bf16 where the device "
            "computes it natively, else fp32); no, bf16 or fp16 replaces it in the cold start, DDPO and the "
            "recognizer rows.",
            "choices": list(PRECISIONS),
        },
    )
    ablation: bool = field(
        default=False,
        metadata={
            "help": "Add the paper's ablation rows: cold-start samples without and with selection, then DDPO runs "
            "with only R_sem, R_sem + R_cov, and all three terms switched on (benchmarks/ablation.py)."
        },
    )
    reference_strengths: list[float] = field(
        default_factory=list,
        metadata={
            "help": "Add reference-guided rows (SDEdit) at each strength in (0, 1]: samples of the cold start, and of "
            "a DDPO run trained on the truncated chain, started from the real training images."
        },
    )
    reference_ddpo: bool = field(
        default=True, metadata={"help": "With reference_strengths: also the reference-guided DDPO runs and rows."}
    )
    paper_rows: bool = field(
        default=True,
        metadata={
            "help": "The full-method row (and the ablation's rows, with the DDPO runs behind them); false keeps the "
            "real rows and the reference-guided ones only."
        },
    )
    stages: str = field(
        default="all",
        metadata={
            "help": "all; generation: the cold start, DDPO runs and synthetic datasets only; recognizers: the "
            "comparison rows on the generative stages a former run left in output_dir (its stages.json).",
            "choices": list(JOB_STAGES),
        },
    )
    recognizer_workers: int = field(
        default=1,
        metadata={"help": "Recognizer rows trained side by side, each in its own process with its share of cores."},
    )
    processes: str = field(
        default="auto",
        metadata={
            "help": "Data-parallel processes of the cold start, DDPO and generation (the command line relaunches "
            "itself with accelerate). auto: one per CPU core up to 2 on a machine without GPU, 1 with a GPU."
        },
    )
    threads: int | None = field(
        default=None,
        metadata={"help": "torch CPU threads per process (None: the cores shared among the processes)."},
    )

    def __post_init__(self) -> None:
        # The job trains on the ORL private split: refuse e.g. --shots 7 now, not after the first stages.
        check_private_options(self.shots, self.split_seed)
        require(self.stages in JOB_STAGES, "stages", self.stages, f"must be one of {', '.join(JOB_STAGES)}.")
        require(
            self.recognizer_start in RECOGNIZER_STARTS,
            "recognizer_start",
            self.recognizer_start,
            f"must be one of {', '.join(RECOGNIZER_STARTS)}.",
        )
        check_precision(self.mixed_precision)
        require(
            self.guidance_scale >= 0,
            "guidance_scale",
            self.guidance_scale,
            "must be >= 0.",
        )
        parse_guidance_interval(self.guidance_interval)
        for name in ("recognizer_seeds", "recognizer_workers", "threads"):
            value = getattr(self, name)
            require(value is None or (type(value) is int and value >= 1), name, value, "must be an integer >= 1.")
        processes = str(self.processes)  # "auto", or a count: from the command line always text
        require(
            processes == "auto" or processes.isdigit() and int(processes) >= 1,
            "processes",
            self.processes,
            "must be auto or an integer >= 1.",
        )
        require(
            processes == "auto" or int(processes) <= MAX_EMBEDDED_PROCESSES,
            "processes",
            self.processes,
            f"the embedded DDPO layout divides among at most {MAX_EMBEDDED_PROCESSES} processes: use auto, 1 or "
            f"{MAX_EMBEDDED_PROCESSES} (run the stages with accelerate launch for other layouts).",
        )
        for strength in self.reference_strengths:
            low, high = parse_reference_strength(strength, "reference_strengths")
            if low != high:
                raise SettingsError(
                    f"--reference_strengths {strength!r}: give single strengths (e.g. 0.4 0.6 0.8), not a range."
                )
        if not self.paper_rows and not self.reference_strengths:
            raise SettingsError(
                "--paper_rows false leaves only the real rows: give --reference_strengths, or keep paper_rows."
            )

    @property
    def recognizer_model(self) -> str:
        from ..recognizer.config import TINY_MODEL  # the recognizer's settings import transformers: on use only

        return self.encoder if self.recognizer_start == "encoder" else TINY_MODEL

    def scaled(self) -> MainJobConfig:
        if not self.quick:
            return self
        return replace(self, samples_per_identity=4, inference_steps=4, recognizer_steps=40)
