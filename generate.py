"""Sample from a checkpoint: ``python generate.py ckpt_path=... out=DIR [n=10000]``; see conf/generate.yaml."""

from dcgan.platform.cli import generate_main

if __name__ == "__main__":
    generate_main()
