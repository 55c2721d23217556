"""Importers of other projects' model files into eqcalc model files."""
