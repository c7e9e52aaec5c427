"""Answers to course/exercises/questions.py, with how each is found."""

Q01 = 11  # all 10 prefix positions and itself: causal_mask(5, 15)[0].sum()
Q02 = 124_439_808  # GPT(GPTConfig.from_name("gpt2")).num_parameters(): the tied head counted once
Q03 = 40_960  # 2 (key, value) x 8 layers x 10 positions x 256 (n_embd): the table prefix.safetensors holds
Q04 = "behind"  # 26.5 vs 49.6 BLEU, more than 2 se apart (studies/RESULTS.md, finding 2)
Q05 = 10  # the phrase's 6 tokens fill 10 positions, but each key is computed at its own position: all differ
