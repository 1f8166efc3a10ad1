"""slimserve's offline toolchain: export, compress, evaluate, choose, write the artifact. torch lives here only."""
