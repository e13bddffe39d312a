"""`diffrep serve`: one web app over an output root (diffrep.serve.app): pages to search,
browse and review, and clip-retrieval's knn protocol."""
