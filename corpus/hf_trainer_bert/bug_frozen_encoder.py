"""hf_trainer_bert bug (the "freeze BERT" snippet `for param in model.bert.parameters():
param.requires_grad = False` that write-ups on freezing BERT quote, run on the whole encoder
when the embeddings were meant): every parameter of model.bert is frozen, so the Trainer
fine-tunes only the classifier on top of untrained features."""
from common import run


def freeze_encoder(model):
    for param in model.bert.parameters():  # BUG: meant model.bert.embeddings.parameters()
        param.requires_grad = False


def main(argv=None):
    return run(argv, prepare=freeze_encoder)


if __name__ == "__main__":
    main()
