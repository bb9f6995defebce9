"""Explanations of image models: Grad-CAM (and Grad-CAM++), integrated gradients on pixels,
SHAP's partition explainer with an image masker, and LIME superpixels; their heatmap reports and
their Spark job. The explainers are registered in ``deepspark.explain.base`` for image models.
"""
