"""lightning_classifier ok: gradient_clip_val=1.0 on the Trainer."""
from common import run


def main(argv=None):
    return run(argv, gradient_clip_val=1.0)


if __name__ == "__main__":
    main()
