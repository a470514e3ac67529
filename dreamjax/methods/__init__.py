"""How the study's arms make and measure data: adversarial steps, classical transforms,
alignment, Fréchet distance, pretraining, the deep dreamer, FixMatch. Deep Dream and the
generators have their own packages beside this one."""
