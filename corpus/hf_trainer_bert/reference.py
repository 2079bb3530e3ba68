"""hf_trainer_bert reference: a tiny BERT fine-tuned with the HuggingFace Trainer."""
from common import run


def main(argv=None):
    return run(argv)


if __name__ == "__main__":
    main()
