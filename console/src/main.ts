document.querySelector("#app")!.textContent = "deskbridge console";
