#pragma once
// The small control messages of a channel connection (docs/wire-format.md,
// "Control messages"): one msgpack map frame each, with `kind` and `version`
// like a packet header so that both are told apart by reading one frame.
//
//   sender   -> receiver   hello    {node, pipeline_hash}
//   receiver -> sender     welcome  {node, credits}
//   receiver -> sender     refused  {node, reason}              handshake refused; the sender gives up
//   receiver -> sender     credit   {n}                         n packets were let go of
//   receiver -> sender     rejected {job_id, reason, credits}   a packet was refused as malformed
//   sender   -> receiver   ping     {}                          heartbeat
//   receiver -> sender     pong     {known}                     false: the receiver does not know this
//                                                               sender (it restarted): say hello again
//   sender   -> receiver   note     {what, job_id, node, stage, step, total, code, reason}
//                                                               a job's news between nodes, outside the
//                                                               credit window (the node runtime's return
//                                                               path: moved / progress / failed to the head,
//                                                               cancel from the head)
#include <cstdint>
#include <string>

#include <msgpack.hpp>
#include <zmq.hpp>

namespace stagecraft::transport {

struct ControlMessage {
  std::string kind;  ///< hello | welcome | refused | credit | rejected | ping | pong | note | packet
  uint64_t version = 0;
  std::string node, pipeline_hash, reason;
  int64_t credits = 0;  ///< welcome: the window; credit: n; rejected: credits returned
  uint64_t job_id = 0;  ///< rejected: the packet's job, 0 when unreadable
  bool known = true;    ///< pong: whether the receiver has this sender's handshake
  // note: what happened to job_id. `what` is moved (it left `node` for `stage` on another
  // node), progress (step of total), failed (code + reason, at `stage`) or cancel.
  std::string what, stage, code;
  int64_t step = 0, total = 0;
};

/// One frame holding `m` (with this build's wire version).
zmq::message_t encode_control(const ControlMessage& m);
/// Reads kind and version of any first frame, and the fields of a control kind.
/// Throws MsgpackFieldError (or msgpack's errors) when the frame is malformed.
ControlMessage decode_control(const zmq::message_t& frame);

}  // namespace stagecraft::transport
