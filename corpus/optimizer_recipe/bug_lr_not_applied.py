"""optimizer_recipe bug (rasbt/LLMs-from-scratch issue 692): the scheduled learning rate is
written after the loop over the parameter groups instead of inside it, so only the last group
(biases, LayerNorm) follows warm-up and decay; the weight matrices train at the constructor's
peak rate from the first step to the last."""
from common import run


def main(argv=None):
    return run(argv, lr_into_every_group=False)  # BUG: param_group['lr'] = lr after the loop, not in it


if __name__ == "__main__":
    main()
