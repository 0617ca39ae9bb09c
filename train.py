"""Train a DCGAN: ``python train.py [data=mnist] [trainer=gpu] [key=value ...]``; see README.md."""

from dcgan.cli import main

if __name__ == "__main__":
    main()
