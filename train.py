"""Train a DCGAN: ``python train.py [data=mnist] [trainer=gpu] [key=value ...]``; see README.md."""

from dcgan.platform.cli import main

if __name__ == "__main__":
    main()
