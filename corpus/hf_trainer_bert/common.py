"""Fine-tuning a (tiny) BERT for sequence classification with the HuggingFace `Trainer`:
the model is built from a `BertConfig` (no hub download), the dataset is a list of dicts
(`input_ids`, `attention_mask`, `labels`) padded by a collator, and the Trainer calls
`model(**batch)`, which computes the loss itself from `labels=`. Evaluation every 10
steps. The data are 3-class "reviews": token sequences of varying length whose class
decides which of three keyword bands its tokens are drawn from, generated here."""
import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402
from transformers import (BertConfig, BertForSequenceClassification, Trainer,  # noqa: E402
                          TrainingArguments, set_seed)
from transformers.utils import logging as hf_logging  # noqa: E402

VOCAB, MAX_LEN, CLASSES = 200, 24, 3
PAD, CLS = 0, 1


def make_examples(n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        label = int(torch.randint(0, CLASSES, (1,), generator=g))
        length = int(torch.randint(8, MAX_LEN, (1,), generator=g))
        tokens = torch.randint(10, VOCAB, (length,), generator=g)
        keyword = 10 + label * 20 + torch.randint(0, 20, (length,), generator=g)
        tokens = torch.where(torch.rand(length, generator=g) < 0.6, keyword, tokens)
        ids = [CLS] + tokens.tolist()
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": label})
    return out


def collate(features):
    """Pads input_ids with PAD and attention_mask with 0 to the longest in the batch."""
    longest = max(len(f["input_ids"]) for f in features)
    pad = [longest - len(f["input_ids"]) for f in features]
    return {"input_ids": torch.tensor([f["input_ids"] + [PAD] * k for f, k in zip(features, pad)]),
            "attention_mask": torch.tensor([f["attention_mask"] + [0] * k for f, k in zip(features, pad)]),
            "labels": torch.tensor([f["labels"] for f in features])}


def accuracy(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


def build_model():
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=MAX_LEN + 2, num_labels=CLASSES,
                        pad_token_id=PAD)
    return BertForSequenceClassification(config)


def run(argv=None, seed=0, learning_rate=2e-3, batch_size=16, prepare=None):
    """Trains with the Trainer; `prepare(model)` is the script's own touch to the model."""
    hf_logging.set_verbosity_error()
    seed = int(os.environ.get("SEED", seed))
    set_seed(seed)
    model = build_model()
    if prepare is not None:
        prepare(model)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch_size,
                                 per_device_eval_batch_size=64, learning_rate=learning_rate,
                                 num_train_epochs=5, eval_strategy="steps", eval_steps=10, logging_steps=10,
                                 save_strategy="no", report_to=[], use_cpu=True, seed=seed,
                                 dataloader_num_workers=0, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=make_examples(480, 1),
                          eval_dataset=make_examples(192, 2), data_collator=collate, compute_metrics=accuracy)
        trainer.train()
        result = trainer.evaluate()
    metrics = {"test_acc": result["eval_accuracy"], "eval_loss": result["eval_loss"]}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics}
