"""Training steps (pretrain, finetune, align, reward) and the training code they share (common, tuning, launch)."""
