pub mod apiserver;
pub mod idp;
