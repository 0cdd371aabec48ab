"""`edgekd export`: a model or a distillation run to quantized ONNX and TFLite files, calibrated
without data and checked against the float model.

formats.py holds the table of formats (what each writes, which precisions and flags it takes,
what it needs installed); onnx_format.py and tflite_format.py do the work for one format each;
source.py reads SOURCE; calibration.py makes the calibration samples; checks.py measures every
artifact; core.py ties them together; command.py is the click command.
"""
