//! Falcon configuration resolution, checkpoint loading and the Falcon forward pass.
