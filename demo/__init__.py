"""The Gradio interface of SC-CLIP Explorer (layout in `ui`, event functions in `handlers`)."""
