"""The synthetic world: procedural objects with real class names, in each dataset's official layout."""
