"""gpt_loss_in_forward bug (Project-MONAI/GenerativeModels issue 314: "we are training them
to predict token N, given tokens 0-N inclusive! To fix this we need to shift the targets
by one"): get_batch takes the targets at the same offsets as the inputs, so the model
learns to copy the token it already sees."""
from common import run


def main(argv=None):
    return run(argv, shift=0)  # BUG: targets not shifted by one position


if __name__ == "__main__":
    main()
