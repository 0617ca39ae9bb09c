"""What a DCGAN learned: ``python visualize.py ckpt_path=... out=DIR [data=mnist]``; see conf/visualize.yaml."""

from dcgan.platform.cli import visualize_main

if __name__ == "__main__":
    visualize_main()
