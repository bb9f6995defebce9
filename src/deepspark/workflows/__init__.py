"""The verbs users call (``train``, ...): each opens the MLflow run and chooses local, Spark or
distributed execution; the layers below (``data``, ``models``, ``training``, ``distributed``)
never call up into here."""
