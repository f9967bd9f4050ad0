"""The message classes of caffe.proto, as upstream's generated ``caffe_pb2`` module offers them.

They are built when the module is imported, from the descriptors of rcaffe's
``proto/caffe.proto`` that the native module carries (compiled by the engine's build, so no
``protoc`` is needed): every message (``NetParameter``, ``Datum``, ``BlobProto``,
``SolverParameter``, ...) and top-level enum (``Phase``), with the enums' values (``TRAIN``,
``TEST``) as module attributes. ``google.protobuf.text_format`` reads and writes them.
"""

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

try:
    from google.protobuf.message_factory import GetMessageClass as _message_class
except ImportError:  # protobuf before 4.21
    from google.protobuf.symbol_database import Default as _default_db

    def _message_class(descriptor):
        return _default_db().GetPrototype(descriptor)


from caffe import _caffe


def _load_file_descriptor():
    files = descriptor_pb2.FileDescriptorSet.FromString(_caffe.caffe_proto_descriptor())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in files.file:
        pool.Add(file_proto)
    return pool.FindFileByName("caffe.proto")


DESCRIPTOR = _load_file_descriptor()

for _name, _descriptor in DESCRIPTOR.message_types_by_name.items():
    globals()[_name] = _message_class(_descriptor)

for _name, _descriptor in DESCRIPTOR.enum_types_by_name.items():
    globals()[_name] = EnumTypeWrapper(_descriptor)
    for _value in _descriptor.values:
        globals()[_value.name] = _value.number

del _name, _descriptor, _value
