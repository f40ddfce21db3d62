"""The methods' trainable building blocks (``nn.Module``s) and the containers that attach them to a layer."""
