"""optimizer_recipe bug (wandb/senpai PR 978: "100 % of training batches are clipped, the
effective step size is ~20x lower than the LR implies"): gradient clipping at max_norm 0.01,
far below the gradient norms the model has, so every update is starved."""
from common import run


def main(argv=None):
    return run(argv, max_norm=0.01)  # BUG: max_norm far below the gradient norms


if __name__ == "__main__":
    main()
