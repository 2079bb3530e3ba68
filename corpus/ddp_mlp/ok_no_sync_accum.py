"""ddp_mlp ok: gradient accumulation over 2 micro-batches with `model.no_sync()` on the
first; gradients are all-reduced once, on the last micro-batch, before the step (valid)."""
from common import run


def main(argv=None):
    return run(argv, accumulate=2)


if __name__ == "__main__":
    main()
