"""Datasets: official layouts -> frozen manifests -> DataModules; plus the synthetic world."""
