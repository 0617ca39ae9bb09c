"""Score a checkpoint: ``python evaluate.py ckpt_path=... data=mnist data.data_dir=...``; see conf/evaluate.yaml."""

from dcgan.platform.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main()
