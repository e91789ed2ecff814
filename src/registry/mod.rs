//! What the module shows the server: the command table (syntax, key specs, ACL categories,
//! docs), its registration, and the INFO sections.
pub mod command_syntax;
pub mod command_table;
pub mod dispatch;
pub mod info;
pub mod register;
