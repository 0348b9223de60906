"""Decoding and refinement as a service over ZMQ, in GNU Radio's PDU format.

- :mod:`~diffjscc.worker.protocol`: DecodeRequest / DecodeReply and their PMT bytes;
- :mod:`~diffjscc.worker.pmt_wire`: the strict PMT reader/writer underneath;
- :mod:`~diffjscc.worker.client`: WorkerClient (what the GNU Radio sink uses), LocalDecoder;
- :mod:`~diffjscc.worker.server`: ``diffjscc worker``, dynamic batching over an engine;
- :mod:`~diffjscc.worker.broker`: one address in front of many workers, fault tolerant;
- :mod:`~diffjscc.worker.engine`: the engines (real codec + refiner, synthetic);
- :mod:`~diffjscc.worker.keys`: ``diffjscc keys``, CURVE encryption and authentication.

Nothing here imports torch or GNU Radio until an engine that needs torch is built.
"""
