"""Copy-detector benchmark (paper 1, sec. 4, Table 1): synthetic copy sets built from real
photos, and retrieval mAP / micro-AP / recall@1 of each query's source per descriptor."""
