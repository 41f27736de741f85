"""The build engine: definition -> manifest -> stages run with cached checkpoints."""
