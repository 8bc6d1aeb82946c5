//! The WebSocket transporter (to be written).
