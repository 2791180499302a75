"""SB3 side of edgellm-gym: `factory` (models from training/hyperparams/*.yml, SlotNet),
`sb3_policy` (a trained model as a baselines Policy), `zoo` (shipped agents in agents/shipped/)."""
