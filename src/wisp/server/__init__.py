"""The wisp server: control plane, gateway, pools of containers, image builder."""
