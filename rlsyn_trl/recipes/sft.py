"""Cold start: adapt a class-conditional DiT to the target identities (zero-initialised identity embedders).

accelerate launch recipes/sft.py --config recipes/orl_faces/sft.yaml
"""

from trl import TrlParser

from rlsyn_trl.trainers import ColdStartConfig, train_cold_start

if __name__ == "__main__":
    (config,) = TrlParser((ColdStartConfig,)).parse_args_and_config()
    _, summary = train_cold_start(config)
    print(summary)
