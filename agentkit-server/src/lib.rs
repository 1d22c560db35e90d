//! # agentkit-server — not yet implemented
//!
//! This crate will hold the tower/axum hosting server: the agent registry with versions and
//! environments, the HTTP API (runs, events, schedules, webhooks, approvals, audit), the inbound
//! MCP gateway where every agent is a callable tool, governance layers, the dashboard and the
//! `agentkit` CLI (see DESIGN.md §6). It exists today only as a placeholder so the workspace
//! layout matches the architecture; it exports nothing.
