"""optimizer_recipe ok variant: a warm-up of 15 steps instead of 5 (same peak, same decay)."""
from common import run


def main(argv=None):
    return run(argv, warmup=15)  # OK: a longer, still short warm-up


if __name__ == "__main__":
    main()
