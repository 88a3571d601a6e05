"""Exports of a run: Neuronpedia import records and a flat publishable explanations-and-scores table."""
