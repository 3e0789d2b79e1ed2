"""The kopf operator: thin handlers around ridgeline.controller.decide."""
