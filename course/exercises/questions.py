"""One question per notebook: replace each None by your answer, then `make check` (or `python -m course 1.q`).
Work each out from the notebook (and the project's code), not by guessing: the grader computes the answers
from the same code and result files."""

# Notebook 01. A prompt of 5 tokens runs after a prefix of 10 positions. How many keys does the prompt's
# first token attend to? (an integer)
Q01 = None

# Notebook 02. How many parameters does GPT-2 small have (GPTConfig.from_name("gpt2")), counting the
# embedding that the output layer shares once? (an integer)
Q02 = None

# Notebook 03. After `materialize()` drops the MLP, how many numbers does a length-10 prefix of the shipped
# model (checkpoints/minigpt-gutenberg) keep? (an integer)
Q03 = None

# Notebook 04, section 3. With 500 training pairs (studies/lowdata, arms prefix-n500 and finetune-n500), is
# the prefix "ahead" of fine-tuning, "behind" it, or "level" (within 2 standard errors)? (one of those words)
Q04 = None

# Notebook 05, section 5. The `worded` prefix starts as the keys and values the frozen model computes for the
# tokens of "table-to-text:", repeated to fill 10 positions. Before any training, how many different key vectors
# does it hold at layer 0 (one per position, all heads together)? (an integer)
Q05 = None
