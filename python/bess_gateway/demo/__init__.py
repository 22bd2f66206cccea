"""The demo: a CSMS (``csms``) that drives the gateway's endpoints like an operator would, in
1.6, 2.0.1 and 2.1 (``station201``, ``station21``), and ``run``, which starts simulator, CSMS and
gateway together (`bess-gateway demo`). Also the CSMS of the load benchmark.

May import anything in the package; the gateway never imports the demo.
"""
