"""`mwa export`: a trained run as standalone ONNX files that onnxruntime runs without mwa's PyTorch model code.

Export directory (written by `mwa export RUN --format onnx`):

| file | content |
|---|---|
| `image_encoder.onnx` | input `pixel_values` float32 [batch, 3, S, S] (RGB, plain resize to S, `x/127.5 - 1`, i.e. mean = std = 0.5); output `embedding` float32 [batch, d], L2-normalised. Backbone, adapter and head in one graph; dynamic batch |
| `text_encoder.onnx` | inputs `input_ids` int64 [batch, L] and `padding_mask` int64 [batch, L] (1 = pad); output `embedding` float32 [batch, d], L2-normalised |
| `tokenizer.spm` (BEiT-3) or `tokenizer/` (Hugging Face backbones) | the run's tokenizer |
| `export.json` | the manifest, see `mwa_cli.export.onnx.export_onnx` (written) and `mwa_cli.export.manifest` (read): run id, dataset hash, adapter identity (the same hashes an index records), input size, normalisation, text length, added tokens, opset, versions |
"""
