"""Reward-guided RL (DDPO) of a cold-start identity adapter with the composite identity reward.

accelerate launch recipes/ddpo.py --config recipes/orl_faces/ddpo.yaml

Two CPU processes: accelerate 1.15's `accelerate launch --cpu --num_processes 2` starts a single process, so use
ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 recipes/ddpo.py --config ...
"""

from trl import TrlParser

from rlsyn_trl.trainers import RLSynDDPOConfig, train_ddpo

if __name__ == "__main__":
    (config,) = TrlParser((RLSynDDPOConfig,)).parse_args_and_config()
    summary = train_ddpo(config)
    print({key: value for key, value in summary.items() if key != "last_epoch"})
