"""Bytes on the wire: the Avro codec and its framings, and the producers' JSON Schemas."""
