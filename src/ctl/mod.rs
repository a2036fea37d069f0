//! The admin's tool, `ds01ctl`: one module per command that does more than print a table.

pub mod doctor;
pub mod explain;
pub mod front_door;
pub mod gpus;
pub mod install;
pub mod limits;
pub mod slice_units;
pub mod socket_reach;
pub mod systemd_unit;
