"""TAS: training-free zero-shot referring segmentation (METHODS.md section 6) and a referring
benchmark built from VOC ground truth. Entry point: `textwsss.tas.pipeline.segment_expression`."""
